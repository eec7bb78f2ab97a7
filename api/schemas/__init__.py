"""marshmallow schemas of the request and response bodies (they are also the OpenAPI document)."""
