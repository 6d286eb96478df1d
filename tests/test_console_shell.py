"""The console shell: login (same accounts and lockout as the API), landing, language."""

from __future__ import annotations

from sqlalchemy import select

from cityops.access.models import AuthSession, User
from tests.console_support import console_user, log_in


async def test_login_lands_on_the_page_asked_for_and_shows_the_account(city) -> None:
    async with console_user(city) as user:
        await user.open("/login")  # the browser's first visit gets its session cookie
        await user.open("/account")  # not logged in: sent to the login page first
        await user.should_see(marker="login")
        await log_in(user, "district1")
        await user.should_see("我的账户")
        await user.should_see("341602")  # the district's data scope
        with city.session() as s:
            uid = s.scalar(select(User.id).where(User.username == "district1"))
            assert s.scalar(select(AuthSession.id).where(AuthSession.user_id == uid)) is not None


async def test_a_wrong_password_is_refused_and_counted(city) -> None:
    async with console_user(city) as user:
        await log_in(user, "operator1", "wrong-password")
        await user.should_see(marker="login-error")
        await user.should_see(marker="login")
        with city.session() as s:
            u = s.scalars(select(User).where(User.username == "operator1")).one()
            assert u.failed_logins == 1


async def test_language_switch_and_logout(city) -> None:
    async with console_user(city) as user:
        await log_in(user, "admin")
        await user.open("/account")
        await user.should_see("我的账户")
        user.find(marker="lang").click()
        await user.should_see("My account")
        user.find(marker="logout").click()
        await user.should_see(marker="login")
        await user.open("/account")
        await user.should_see(marker="login")  # the session is gone
        with city.session() as s:
            uid = s.scalar(select(User.id).where(User.username == "admin"))
            assert all(s.scalars(select(AuthSession.revoked).where(AuthSession.user_id == uid)))
