"""Import every bounded context's tables so that metadata is complete (Alembic, tests)."""

from cityops.access import models as access_models
from cityops.cases import models as cases_models
from cityops.core import audit
from cityops.core.db import Base
from cityops.evaluation import models as evaluation_models
from cityops.evaluation import schedule_models as evaluation_schedule_models
from cityops.flood import models as flood_models
from cityops.geo import models as geo_models
from cityops.monitoring import models as monitoring_models
from cityops.public import models as public_models
from cityops.worktime import models as worktime_models

__all__ = [
    "Base",
    "access_models",
    "audit",
    "cases_models",
    "evaluation_models",
    "evaluation_schedule_models",
    "flood_models",
    "geo_models",
    "monitoring_models",
    "public_models",
    "worktime_models",
]
