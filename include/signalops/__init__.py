"""signalops: an MLOps pipeline for trading-signal models, run as Apache Airflow 3 DAGs.

Importing the package (or any of its modules) has no side effects: no folders, connections
or global settings. Heavy libraries are imported by the modules that need them, which DAG
files import only inside tasks.
"""

__version__ = "0.1.0"
