"""cases.claim_version: the fence between a claim and the contour stored under it

Revision ID: 0004_case_claim_version
Revises: 0003_identity
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_case_claim_version"
down_revision: str | None = "0003_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot alter a table in place
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("claim_version", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("claim_version")
