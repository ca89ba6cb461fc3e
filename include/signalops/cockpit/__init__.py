"""The Signals page (the Airflow plugin's FastAPI app) and the Prometheus exporter."""
