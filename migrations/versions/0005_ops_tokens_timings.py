"""Token names unique among unrevoked tokens; the timings metrics read (scoring, segmentation, completion
to decision)

Revision ID: 0005_ops_tokens_timings
Revises: 0004_case_claim_version
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_ops_tokens_timings"
down_revision: str | None = "0004_case_claim_version"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Unrevoked tokens that share a name (every token was "default" unless told otherwise) keep the oldest's
    # name; the others get their id appended, so each name is one identity from now on.
    op.execute("UPDATE api_tokens SET name = name || '-' || CAST(id AS VARCHAR(20)) WHERE revoked_at IS NULL AND "
               "id NOT IN (SELECT min(id) FROM api_tokens WHERE revoked_at IS NULL GROUP BY name)")  # fmt: skip
    active = "revoked_at IS NULL"
    op.create_index("uq_api_tokens_active_name", "api_tokens", ["name"], unique=True,
                    postgresql_where=sa.text(active), sqlite_where=sa.text(active))  # fmt: skip
    with op.batch_alter_table("series_decisions") as batch:
        batch.add_column(sa.Column("scoring_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("completion_to_decision_s", sa.Float(), nullable=True))
    with op.batch_alter_table("segmentations") as batch:
        batch.add_column(sa.Column("duration_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segmentations") as batch:
        batch.drop_column("duration_s")
    with op.batch_alter_table("series_decisions") as batch:
        batch.drop_column("completion_to_decision_s")
        batch.drop_column("scoring_s")
    op.drop_index("uq_api_tokens_active_name", table_name="api_tokens")
