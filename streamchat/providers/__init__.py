"""Model providers: each turns a `ModelRequest` into a stream of `ModelDelta`s."""

from streamchat.providers.base import Message, ModelRequest, Provider, Stream, UpstreamError

__all__ = ["Message", "ModelRequest", "Provider", "Stream", "UpstreamError"]
