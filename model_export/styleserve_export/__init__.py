"""Turns a VGG weight source into a verified, cached artifact the server only loads."""
