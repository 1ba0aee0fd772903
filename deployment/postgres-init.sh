#!/bin/sh
# First start of the Postgres container only (docker-entrypoint-initdb.d): the image creates
# $POSTGRES_DB (Dagster's); this adds MLflow's database, owned by the same role.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -c "CREATE DATABASE \"$MLFLOW_PG_DB\" OWNER \"$POSTGRES_USER\""
