"""hashing: learn compact binary codes for images and retrieve by Hamming distance.

Importing the package is cheap on purpose: torch and friends are imported by the
submodules that need them, so `hashing --help` and `import indexes` stay fast.
"""

__version__ = "0.1.0"
