-- docker-compose.yml: the postgres image creates the `mlflow` database (POSTGRES_DB); Prefect gets its own.
CREATE DATABASE prefect;
