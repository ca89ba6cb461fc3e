"""The production topology as native processes (``make stack`` / ``make stack-down``).

``python -m signalops.stack`` runs ``cli.main`` (``__main__``); ``cli`` says what each
command does. The modules, in the order a start goes through them:

* ``definition``: what runs and with which settings: ``ops/Procfile``'s services (the
  optional ones by their switch), ``ops/stack.env`` sourced on top of the environment, the
  generated Airflow secrets, ``StackError``.
* ``provision``: the one-shot steps before the services start: the ports are free, the
  PostgreSQL databases exist, ``airflow db migrate``.
* ``prometheus``: the native Prometheus config, written from the compose one.
* ``supervisor``: runs the services (own process groups, restarts with back-off, holds,
  ``kill``) and keeps ``processes.json``, which the other commands read.
* ``health``: each service's health check, and waiting until all pass.
* ``cli``: ``up``, ``down``, ``status``, ``stop`` / ``start`` / ``kill``, ``env``,
  ``supervise``.
"""
