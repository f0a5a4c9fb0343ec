"""Generated gRPC stubs of styleserve.v1 (scripts/gen_protos.sh); do not edit by hand."""
