"""A principal is a caller resolved from a credential: a user acting in one project
with one role there. Pure data: the rules of who may use which instance live here
and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from demanager.domain.instance import Owner, ProjectId, UserId


class Role(StrEnum):
    ADMIN = "admin"
    """Every instance of the project."""
    MEMBER = "member"
    """Only the instances the user created."""


@dataclass(frozen=True)
class Principal:
    user_id: str
    user_name: str
    project_id: str
    role: Role
    operator: bool = False
    """The bootstrap operator: an admin of every project."""
    token_digest: str | None = field(default=None, compare=False, repr=False)
    """The API token the principal was resolved from (keyed digest), if any: grants made
    for this principal carry it, so revoking the token ends them too."""

    @property
    def sees_project(self) -> bool:
        """Whether the principal may see every instance of the project, not only its own."""
        return self.operator or self.role is Role.ADMIN

    def may_use(self, owner_user_id: str) -> bool:
        """Whether the principal may read, change or open an instance owned by that user."""
        return self.sees_project or owner_user_id == self.user_id

    def owner_filter(self) -> str | None:
        """The user id every instance this principal reaches must belong to, if any."""
        return None if self.sees_project else self.user_id

    def owner(self) -> Owner:
        return Owner(UserId(self.user_id), self.user_name, ProjectId(self.project_id))
