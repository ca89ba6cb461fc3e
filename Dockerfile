# signalops image: Airflow 3 + the pinned runtime stack + the signalops package.
# One image serves every Airflow component (api-server, scheduler, dag-processor, triggerer,
# celery worker) and the serving sidecar, so DAG parsing and task execution see the same code.
FROM apache/airflow:3.3.2-python3.11

# The official image expects pip to run as `airflow` (uid 50000), never root; AIRFLOW_HOME is
# /opt/airflow. Stay on that user so installed packages land where the entrypoint looks.
USER airflow
WORKDIR /opt/airflow

# Dependencies first, in their own layer: code edits below do not re-run this slow install.
# requirements.txt pins apache-airflow==3.3.2 itself, so pip cannot swap out the image's Airflow;
# constraints.txt holds the transitive pins `make install` tested, so the image matches the venv.
COPY --chown=airflow:0 requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt

# The signalops package (include/signalops). Editable on purpose: docker-compose.yaml mounts
# ./include over /opt/airflow/include for development, and an editable install imports from
# that path, so mounted edits are live; without the mount the copied code is used.
# --no-deps: every runtime dependency was installed (pinned) above.
COPY --chown=airflow:0 pyproject.toml ./
COPY --chown=airflow:0 include/ ./include/
RUN pip install --no-cache-dir --no-deps -e .

# Fail the build when the installed set is inconsistent (a requirement the pins above broke,
# e.g. a provider of the base image that needs another celery/Airflow than constraints.txt).
RUN pip check

# DAGs and plugins where Airflow looks for them by default ($AIRFLOW_HOME/dags, /plugins).
COPY --chown=airflow:0 dags/ ./dags/
COPY --chown=airflow:0 plugins/ ./plugins/

# SIGNALOPS_STATE_DIR (lake, staging) and the simple auth manager's password file
# (/opt/airflow/auth) are named volumes in docker-compose.yaml. Creating the directories here,
# owned by airflow, makes Docker seed the empty volumes with that ownership; otherwise they
# would be root-owned and unwritable by the tasks / the api-server.
RUN mkdir -p /opt/airflow/signalops-state /opt/airflow/auth
ENV SIGNALOPS_STATE_DIR=/opt/airflow/signalops-state
