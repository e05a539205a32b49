"""mcls: face photos -> mask state x gender x age group, with fastai, timm and albumentations."""
__version__ = '0.1.0'
