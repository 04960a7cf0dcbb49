"""The HTTP service: classification requests and the review app in the browser."""
