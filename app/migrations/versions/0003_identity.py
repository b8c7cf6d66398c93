"""identity: the issuer of a study's PatientID and a series' FrameOfReferenceUID, for the identity rules

Revision ID: 0003_identity
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_identity"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: rows stored before this revision have no known value, and the rules compare these two
    # attributes only where both sides have one (README, "Identity rules").
    op.add_column("studies", sa.Column("issuer_of_patient_id", sa.String(length=64), nullable=True))
    op.add_column("series", sa.Column("frame_of_reference_uid", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite drops a column by copying the table
    with op.batch_alter_table("series") as batch:
        batch.drop_column("frame_of_reference_uid")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("issuer_of_patient_id")
