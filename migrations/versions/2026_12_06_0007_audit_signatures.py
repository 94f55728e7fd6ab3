"""audit signatures: the chain head and every purge checkpoint carry an Ed25519 signature

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

The audit writer signs each chain head it writes and a purge signs each checkpoint,
with a key the database does not hold (ACCORD_AUDIT_SIGNING_KEY_FILE). The signature
is text, `ed25519:<key id>:<base64>`; NULL where a deployment runs unsigned
(ACCORD_AUDIT_UNSIGNED, development only) and on checkpoints made before this
revision, which `accord audit verify` reports as unsigned.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_chain_head") as batch:
        batch.add_column(sa.Column("signature", sa.String(length=160), nullable=True))
    with op.batch_alter_table("audit_checkpoints") as batch:
        batch.add_column(sa.Column("signature", sa.String(length=160), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_checkpoints") as batch:
        batch.drop_column("signature")
    with op.batch_alter_table("audit_chain_head") as batch:
        batch.drop_column("signature")
