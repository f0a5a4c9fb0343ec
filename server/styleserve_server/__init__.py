"""The styleserve gRPC service: engine, admission, and the gRPC layer around them."""
