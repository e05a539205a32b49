"""Finished studies: each answered one question, recorded in docs/ with the command that ran it; kept runnable."""
