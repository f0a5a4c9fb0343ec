"""Turns weight sources (VGG backbones, the feed-forward pair) into verified, cached artifacts
that the server only loads."""
