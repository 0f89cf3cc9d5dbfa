"""jobs index trim: one foreign-key check per new job, and no index no query reads

Every job a file queues used to enter `ix_jobs_queued` (priority, created_at) and fire two
foreign-key checks (its submission, its tenant). No query reads that index for its order:
the coalescer claims queued jobs most urgent first (an expression on the deadline), so it
sorts whatever it finds, and finding the queued rows is what `ix_jobs_tenant_unfinished`
(tenant, status) over unfinished jobs already serves; the plans of the queued-job queries
stay index scans without it. The two checks become one: a job's (submission, tenant)
must be a submission's own (id, tenant), which also holds a job to its submission's
tenant; that submission's tenant exists by the submissions' own key.

Revision ID: 0029_jobs_index_trim
Revises: 0026_engine_overlap
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029_jobs_index_trim"
down_revision: str | None = "0026_engine_overlap"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_unique_constraint("uq_submissions_id_tenant", "submissions", ["id", "tenant_id"])
    # Checked against the rows already there without blocking writes while it reads them.
    op.execute("ALTER TABLE jobs ADD CONSTRAINT fk_jobs_submission_tenant "
               "FOREIGN KEY (submission_id, tenant_id) REFERENCES submissions (id, tenant_id) "
               "NOT VALID")
    op.execute("ALTER TABLE jobs VALIDATE CONSTRAINT fk_jobs_submission_tenant")
    op.drop_constraint("jobs_submission_id_fkey", "jobs", type_="foreignkey")
    op.drop_constraint("jobs_tenant_id_fkey", "jobs", type_="foreignkey")
    op.drop_index("ix_jobs_queued", table_name="jobs",
                  postgresql_where=sa.text("status = 'queued'"))


def downgrade() -> None:
    op.create_index("ix_jobs_queued", "jobs", ["priority", "created_at"],
                    postgresql_where=sa.text("status = 'queued'"))
    op.create_foreign_key("jobs_tenant_id_fkey", "jobs", "tenants", ["tenant_id"], ["id"])
    op.create_foreign_key("jobs_submission_id_fkey", "jobs", "submissions",
                          ["submission_id"], ["id"])
    op.drop_constraint("fk_jobs_submission_tenant", "jobs", type_="foreignkey")
    op.drop_constraint("uq_submissions_id_tenant", "submissions", type_="unique")
