"""Administration of the test PostgreSQL server: one database per test, created and dropped here."""

import os

import psycopg2

# the server `make test` makes sure answers (cliptext.local_services)
PG_ADMIN_URL = os.environ.get("CLIPTEXT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pg_admin(sql: str) -> None:
    conn = psycopg2.connect(PG_ADMIN_URL)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()
