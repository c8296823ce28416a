"""Test factories: real ESP images and filesystem images (see images.py)."""
