"""Tests of the Dockerfile, the Kubernetes manifests and the scripts that deploy them."""
