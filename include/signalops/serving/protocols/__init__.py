"""The protocols the sidecar speaks. Each parses a request body into one typed request
(what to score and how to read each model's inputs) and renders one typed result; scoring
itself is :mod:`signalops.serving.scoring`'s, the same for all of them.

* :mod:`.native`: ``POST /v1/signals`` (by symbol from the online store, or inline features);
* :mod:`.mlflow`: ``POST /invocations``, the MLflow scoring protocol;
* :mod:`.v2`: the Open Inference Protocol (KServe V2), JSON and the binary data extension.
"""
