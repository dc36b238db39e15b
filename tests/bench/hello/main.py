"""A trivial functions-framework function: the baseline the benchmarks compare real functions with."""

import flask
import functions_framework


@functions_framework.http
def hello(request: flask.Request) -> flask.Response:
    return flask.Response('{"hello": "world"}', content_type="application/json")
