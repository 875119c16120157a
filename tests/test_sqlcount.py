import os
from pathlib import Path

from sqlalchemy import Engine, text

from models.db import READING, adopt_after_fork, get_engine
from tests.sqlcount import counting


def engine_with_table(tmp_path: Path, columns: str) -> Engine:
    engine = get_engine(f"sqlite:///{tmp_path / 'count.db'}")
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE t ({columns})"))
    return engine


def test_counts_statements_and_transactions_but_not_the_begin_hook(tmp_path: Path) -> None:
    engine = engine_with_table(tmp_path, "n INTEGER")
    with counting(engine) as count:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
            connection.execute(text("SELECT n FROM t"))
        with engine.connect() as connection:
            connection.execute(text("SELECT count(*) FROM t"))
            connection.rollback()
    assert (count.statements, count.transactions, count.writing_transactions) == (3, 2, 1)
    assert all(not statement.upper().startswith("BEGIN") for statement in count.texts)


def test_a_with_statement_that_modifies_rows_is_a_writing_transaction_and_one_that_reads_is_not(tmp_path: Path) -> None:
    engine = engine_with_table(tmp_path, "n INTEGER, last_updated INTEGER")
    with counting(engine) as count:
        with engine.begin() as connection:
            connection.execute(text("WITH m AS (SELECT 1 AS n) SELECT n, NULL AS last_updated FROM m"))
        with engine.begin() as connection:
            connection.execute(text("WITH m AS (SELECT 1 AS n) UPDATE t SET n = (SELECT n FROM m)"))
    assert (count.transactions, count.writing_transactions) == (2, 1)


def test_a_process_forked_inside_the_block_adds_to_the_same_totals(tmp_path: Path) -> None:
    """``sync --jobs N`` on SQLite runs whole syncs in forked worker processes: their SQL counts too."""
    engine = engine_with_table(tmp_path, "n INTEGER")
    with counting(engine) as count:
        child = os.fork()
        if child == 0:
            code = 1
            try:
                adopt_after_fork(engine)
                with engine.begin() as connection:
                    connection.execute(text("INSERT INTO t VALUES (1)"))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        with engine.begin() as connection:
            connection.execute(text("SELECT n FROM t"))
    assert os.waitstatus_to_exitcode(status) == 0
    assert (count.statements, count.transactions, count.writing_transactions) == (2, 2, 1)
    count.reset()
    assert (count.statements, count.transactions, count.texts) == (0, 0, [])


def test_a_transaction_that_begins_with_sqlites_write_lock_is_counted_as_one_reads_or_not(tmp_path: Path) -> None:
    engine = engine_with_table(tmp_path, "n INTEGER")
    with counting(engine) as count:
        with engine.begin() as connection:
            connection.execute(text("SELECT n FROM t"))
        with engine.connect().execution_options(**{READING: True}) as connection:
            connection.execute(text("SELECT n FROM t"))
            connection.rollback()
    assert (count.transactions, count.write_locking_transactions, count.writing_transactions) == (2, 1, 0)
