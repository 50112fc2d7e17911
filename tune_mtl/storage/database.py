"""The Optuna storage URL checked before Ray starts: its driver is installed and the server answers.

Without this a missing driver or a wrong host surfaces only after Ray started and the run folder was written,
as SQLAlchemy's traceback (which does not even say which module to install).
"""

from __future__ import annotations

from tune_mtl.core.errors import UserError
from tune_mtl.storage.failures import reason
from tune_mtl.storage.secrets import mask_url

# Python module -> what to install for it. The default driver of postgresql:// in SQLAlchemy 2.1 is psycopg 3,
# which the project installs.
DRIVER_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pymysql": "PyMySQL",
                   "MySQLdb": "mysqlclient", "asyncpg": "asyncpg", "pg8000": "pg8000"}
CONNECT_TIMEOUT_S = 5


def check_optuna_url(url: str) -> None:
    """One sentence (naming the masked URL) unless SQLAlchemy can load its driver and, for a server, connect."""
    import sqlalchemy

    shown = mask_url(url)
    try:
        engine = sqlalchemy.create_engine(url)
    except ModuleNotFoundError as err:
        module = (err.name or "").split(".")[0]
        package = DRIVER_PACKAGES.get(module, module)
        raise UserError(f"the Optuna storage '{shown}' needs the Python module '{module}', which is not installed: "
                        f"pip install '{package}' (or use postgresql:// with the psycopg driver the project "
                        "installs)") from None
    except (sqlalchemy.exc.ArgumentError, ValueError) as err:
        raise UserError(f"--optuna-storage '{shown}' is not a database URL SQLAlchemy accepts ({reason(err)}); "
                        "e.g. postgresql://user@host:5432/db") from None
    if engine.dialect.name == "sqlite":
        engine.dispose()
        return
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if engine.dialect.name == "postgresql" else {}
    engine.dispose()
    engine = sqlalchemy.create_engine(url, connect_args=connect_args)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as err:
        cause = getattr(err, "orig", None) or err  # the driver's own error, without SQLAlchemy's SQL dump
        raise UserError(f"cannot connect to the Optuna storage '{shown}' ({reason(cause)}); check that "
                        "the database server runs and the URL, user and password are right") from None
    finally:
        engine.dispose()
