"""The ``mailnode`` command. Every error ends in one line saying what to do, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import re
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mailnode.addressing import unreachable
from mailnode.client_tls import TLS_NAME, certificate_files, fingerprint
from mailnode.clientsettings import client_settings
from mailnode.config import (
    CONFIG_NAME,
    DB_NAME,
    NODE_KEY_NAME,
    Config,
    ConfigError,
    default_data_dir,
    is_loopback,
    load,
    parse_hostport,
    render,
    validate,
)
from mailnode.logsafe import safe_handler
from mailnode.store.api import User

if TYPE_CHECKING:
    from mailnode.passwords import Verdict as PasswordVerdict
    from mailnode.store.database import Database
    from mailnode.store.sqlite import SqlStore

USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class CliError(Exception):
    """A user-facing failure: printed as ``mailnode: <message>``, exit status 1."""


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else default_data_dir()


def _confirm(question: str, yes: bool, refusal: str) -> None:
    """Go on when ``--yes`` was given or the user agrees in a terminal; else one line."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(refusal)
    try:
        answer = input(f"{question} [y/N] ").strip().lower()
    except EOFError:  # Ctrl-D: a no
        answer = ""
    if answer not in ("y", "yes"):
        raise CliError("nothing was changed")


def _confirm_exposure(config: Config, yes: bool) -> None:
    """Listening beyond loopback is a choice the owner makes knowingly."""
    if is_loopback(config.host):
        return
    _confirm(f"--host {config.host} makes SMTP and IMAP reachable from other machines; "
             "they will take a password only after STARTTLS. Listen there?", yes,
             f"--host {config.host} makes SMTP and IMAP reachable from other machines (they "
             "then require STARTTLS before a password): add --yes to confirm, or leave "
             "--host out to stay on this machine")


def _check_new_node(data_dir: Path) -> None:
    """Refuse before anything is written: a file, an unwritable place, an existing node."""
    from mailnode.guide import unusable_dir

    if (problem := unusable_dir(data_dir)) is not None:
        raise CliError(problem)
    if (data_dir / CONFIG_NAME).exists():
        raise CliError(f"{data_dir} already holds a node ({CONFIG_NAME} exists); refusing to "
                       "overwrite its keys and mail. Choose another --data-dir, or edit "
                       f"{data_dir / CONFIG_NAME} to change its settings.")


def cmd_init(args: argparse.Namespace) -> None:
    from mailnode.guide import JOIN_HINT, choices, orphaned

    data_dir = _data_dir(args)
    _check_new_node(data_dir)
    config = _config_from(args)
    _confirm_exposure(config, args.yes)
    repair = orphaned(data_dir)
    init_data_dir(data_dir, config)
    if repair:
        print(f"Wrote a new {CONFIG_NAME} in {data_dir} with the settings below; the keys and "
              "mail already there are kept.")
    else:
        print(f"Created a mailnode data directory in {data_dir}:")
        print(f"  {CONFIG_NAME:14} settings (documented inside; edit and restart to change)")
        print(f"  {NODE_KEY_NAME:14} this node's secret transport key (mode 0600, back it up)")
        print(f"  {DB_NAME:14} mailboxes, queue and user keys (SQLite, mode 0600)")
        print(f"  {TLS_NAME:14} certificate for STARTTLS on SMTP and IMAP (mode 0600)")
    print("Choices made (all in mailnode.toml):")
    for line in choices(config, data_dir):
        print(line)
    print(f"Next: mailnode --data-dir {data_dir} user add NAME, then mailnode --data-dir "
          f"{data_dir} run")
    print(JOIN_HINT)


def init_data_dir(data_dir: Path, config: Config) -> None:
    """Write mailnode.toml and create whatever else is missing (nothing is overwritten)."""
    from mailnode.client_tls import ensure_certificate
    from mailnode.keys import create_node_key
    from mailnode.store.database import Database

    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(data_dir / CONFIG_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise CliError(f"cannot create a node in {data_dir}: {exc.strerror}; choose another "
                       "--data-dir") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(render(config))
    if not (data_dir / NODE_KEY_NAME).exists():
        create_node_key(data_dir / NODE_KEY_NAME)
    ensure_certificate(data_dir, config.host, time.time())
    Database.open(data_dir / DB_NAME).close()


def _read_password(name: str, allow_weak: bool) -> str:
    """From $MAILNODE_PASSWORD or asked twice in a terminal; judged for strength either way."""
    from mailnode.passwords import judge

    password = os.environ.get("MAILNODE_PASSWORD")
    if password is not None:
        if not password:
            raise CliError("MAILNODE_PASSWORD is set but empty: set it to the password, or "
                           "unset it to be asked in a terminal")
        _strong_enough(judge(password, (name,)), allow_weak)
        return password
    if not sys.stdin.isatty():
        raise CliError("no password: set MAILNODE_PASSWORD or run in a terminal")
    for _ in range(3):
        password = getpass.getpass(f"Password for {name}: ")
        verdict = judge(password, (name,))
        if verdict.ok or (allow_weak and not verdict.never):
            if getpass.getpass("Repeat password: ") != password:
                raise CliError("the passwords differ; nothing was changed")
            return password
        print(f"{verdict.problem}. Try another"
              + ("." if verdict.never else " (or run again with --allow-weak)."),
              file=sys.stderr)
    raise CliError("no strong enough password given; nothing was changed")


def _strong_enough(verdict: PasswordVerdict, allow_weak: bool) -> None:
    if verdict.ok or (allow_weak and not verdict.never):
        return
    raise CliError(f"{verdict.problem}. Choose another"
                   + ("" if verdict.never else ", or add --allow-weak to keep it"))


def _add_user(data_dir: Path, name: str, password: str) -> User:
    from crypto.keys import Identity
    from mailnode.store.database import Database
    from mailnode.store.notify import ChangeNotifier
    from mailnode.store.sqlite import SqlStore, UserExists

    if not USER_NAME.match(name):
        raise CliError(f"{name!r} is not a valid user name: use lowercase letters, digits, "
                       "'.', '_' or '-' (at most 64)")
    db = Database.open(data_dir / DB_NAME)
    try:
        store = SqlStore(db, ChangeNotifier())
        return asyncio.run(store.create_user(name, password, Identity.generate()))
    except UserExists as exc:
        raise CliError(f"{exc}; pick another name") from exc
    finally:
        db.close()


def _open_store(data_dir: Path) -> tuple[Database, SqlStore]:
    from mailnode.store.database import Database
    from mailnode.store.notify import ChangeNotifier
    from mailnode.store.sqlite import SqlStore

    db = Database.open(data_dir / DB_NAME)
    return db, SqlStore(db, ChangeNotifier())


def cmd_user(args: argparse.Namespace) -> None:
    """``user add | list | passwd | remove``."""
    data_dir = _data_dir(args)
    _require_node(data_dir)
    action = args.user_command
    if action == "add":
        user = _add_user(data_dir, args.name, _read_password(args.name, args.allow_weak))
        print(f"Created user {user.name}. Log in to IMAP and SMTP as {user.name!r} "
              "(or with the full address). Their address is:")
        print(user.address)
        return
    db, store = _open_store(data_dir)
    try:
        if action == "list":
            users = asyncio.run(store.list_users())
            if not users:
                print(f"no users yet: mailnode --data-dir {data_dir} user add NAME")
            for user in users:
                print(f"{user.name:16} {user.address}")
            return
        if not USER_NAME.match(args.name) or asyncio.run(store.find_user(args.name)) is None:
            raise CliError(f"no user {args.name!r} on this node (`mailnode user list` shows "
                           "them)")
        if action == "passwd":
            asyncio.run(store.set_password(args.name, _read_password(args.name,
                                                                     args.allow_weak)))
            print(f"Changed the password of {args.name}; mail clients must log in again with "
                  "the new one.")
        else:
            _confirm(f"Delete {args.name} with all their mail? This cannot be undone.",
                     args.yes, f"removing {args.name} deletes all their mail: add --yes to "
                     "confirm")
            asyncio.run(store.delete_user(args.name))
            print(f"Removed {args.name} and their mail.")
    finally:
        db.close()


def _require_node(data_dir: Path) -> None:
    from mailnode.guide import no_node

    if not (data_dir / CONFIG_NAME).is_file():
        raise CliError(no_node(data_dir))


def _configure_logging(verbose: bool, serving: bool) -> None:
    """Serving commands log their work; one-shot commands only warnings (or all with -v)."""
    level = logging.DEBUG if verbose else (logging.INFO if serving else logging.WARNING)
    # Every line passes the escaping formatter: values from the network cannot forge lines.
    logging.basicConfig(level=level, handlers=[safe_handler(sys.stderr)])
    logging.getLogger("kademlia").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.getLogger("rpcudp").setLevel(logging.WARNING)
    from mailnode.logsetup import quiet_alembic
    quiet_alembic()


def _run_node(data_dir: Path, banner: list[str] | None = None) -> None:
    from mailnode.logsetup import attach_for
    from mailnode.node import serve
    from mailnode.runstate import Listening

    _require_node(data_dir)
    attach_for(data_dir)  # the node's prefix and format, and mailnode.log

    def ready(where: Listening) -> None:
        for line in banner or []:
            print(line)
        print(f"mailnode ready: smtp={where.host}:{where.smtp_port} "
              f"imap={where.host}:{where.imap_port} p2p={where.p2p_host}:{where.p2p_port} "
              f"node={where.node_key[:16]}", flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(data_dir, stop, ready)

    try:
        asyncio.run(main())
    except OSError as exc:
        raise CliError(f"cannot start: {exc}. Is another node using these ports? "
                       f"Change them in {data_dir / CONFIG_NAME}.") from exc
    print("mailnode stopped", flush=True)


def cmd_run(args: argparse.Namespace) -> None:
    _run_node(_data_dir(args))


def cmd_status(args: argparse.Namespace) -> None:
    from mailnode.delivery.headers import authserv_id
    from mailnode.keys import load_node_key
    from mailnode.runstate import read_status
    from mailnode.store.database import Database
    from mailnode.store.friends import Friend, FriendStore
    from mailnode.store.notify import ChangeNotifier
    from mailnode.store.sqlite import SqlStore

    data_dir = _data_dir(args)
    _require_node(data_dir)
    config = load(data_dir / CONFIG_NAME)
    node = load_node_key(data_dir / NODE_KEY_NAME)
    db = Database.open(data_dir / DB_NAME)
    try:
        store = SqlStore(db, ChangeNotifier())

        async def gather() -> tuple[list[User], int, list[Friend]]:
            return (await store.list_users(), await store.queue_length(),
                    await FriendStore(db).list_friends())
        users, queued, friends = asyncio.run(gather())
    finally:
        db.close()
    print(f"node id      : {node.verify_key.hex()}")
    # Mail clients should trust only Authentication-Results headers naming this id (README).
    print(f"authserv-id  : {authserv_id(node.verify_key)}")
    print(f"data dir     : {data_dir}")
    running = read_status(data_dir)
    if running is None:
        print("state        : stopped")
        print(f"listeners    : smtp {config.host}:{config.smtp_port}  imap {config.host}:"
              f"{config.imap_port}  p2p {config.p2p_bind}:{config.p2p_port} (when running)")
        print("DHT peers    : unknown (node not running)")
    else:
        print(f"state        : running (pid {running['pid']})")
        print(f"listeners    : smtp {running['host']}:{running['smtp_port']}  imap "
              f"{running['host']}:{running['imap_port']}  p2p {running['p2p_host']}:"
              f"{running['p2p_port']}")
        print(f"DHT peers    : {running['dht_peers']}")
        print(f"published    : {running['records_published']} address record(s)")
        published = [(str(h), int(p)) for h, p in running.get("endpoints", [])]
        print("endpoints    : " + ("  ".join(f"{h}:{p}" for h, p in published)
                                   or "none yet"))
        peers = [(str(h), int(p)) for h, p in running.get("peers", [])]
        for warning in unreachable(published, peers):
            print(f"WARNING      : {warning}")
    print(f"queue        : {queued} message(s) waiting for delivery")
    relays = [f.name for f in friends if f.holds_for_us and f.endpoints]
    print(f"friends      : {len(friends)}" + (
        f" ({', '.join(f.name + (' pending' if f.pending else '') for f in friends)}); "
        f"relays for your users: {', '.join(relays) or 'none'}" if friends else
        " (`mailnode invite` makes a token for a friend's node)"))
    print(f"users        : {len(users)}")
    for user in users:
        print(f"  {user.name:16} {user.address}")


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def cmd_queue(args: argparse.Namespace) -> None:
    """List the waiting recipients, or make some (or all) due now."""
    from mailnode.logsafe import clean
    from mailnode.store.database import Database
    from mailnode.store.notify import ChangeNotifier
    from mailnode.store.sqlite import SqlStore

    data_dir = _data_dir(args)
    _require_node(data_dir)
    db = Database.open(data_dir / DB_NAME)
    try:
        store = SqlStore(db, ChangeNotifier())
        now = time.time()
        if args.queue_command == "retry":
            ids = args.ids or None
            count = asyncio.run(store.retry_now(ids, int(now)))
            print(f"{count} queued message(s) due now; a running node sends them within "
                  "seconds")
            if ids is not None and count < len(set(ids)):
                raise CliError("some ids are not in the queue (`mailnode queue` lists them)")
            return
        entries = asyncio.run(store.queue_entries())
    finally:
        db.close()
    if not entries:
        print("queue is empty")
    for e in entries:
        due = "now" if e.next_attempt_at <= now else f"in {_age(e.next_attempt_at - now)}"
        error = f"  last error: {clean(e.last_error, 120)}" if e.last_error else ""
        print(f"{e.id:6d}  {e.recipient}  from {e.sender}  queued {_age(now - e.created_at)} "
              f"ago  attempts {e.attempts}  next {due}{error}")


def cmd_invite(args: argparse.Namespace) -> None:
    """Print a one-time invite token (last line), as a QR code too in a terminal."""
    from mailnode.friends.commands import INVITE_DAYS, FriendError, create_invite

    data_dir = _data_dir(args)
    _require_node(data_dir)
    try:
        invite = create_invite(data_dir, args.hold_mb, args.hold_days)
    except FriendError as exc:
        raise CliError(str(exc)) from None
    token = invite.encode()
    where = ", ".join(f"{h}:{p}" for h, p in invite.endpoints)
    print(f"Invite for one friend's node, valid {INVITE_DAYS} days, usable once. Your node "
          f"({invite.name}, reachable at {where}) will hold up to {args.hold_mb} MB for "
          f"{args.hold_days} days for their users while their node is away. Send the token "
          "privately (it works like a password); they run: mailnode friend add TOKEN")
    if args.qr or sys.stdout.isatty():
        import segno

        segno.make(token, error="l").terminal(compact=True)
    print(token)


def cmd_friend(args: argparse.Namespace) -> None:
    from mailnode.friends.commands import (
        FriendError,
        add_friend,
        describe,
        list_friends,
        remove_friend,
    )
    from mailnode.logsafe import clean

    data_dir = _data_dir(args)
    _require_node(data_dir)
    try:
        if args.friend_command == "add":
            added = add_friend(data_dir, args.token, args.hold_mb, args.hold_days)
            name = added.friend.name
            if added.welcome is not None:
                print(f"Friends with {name}: each node now bootstraps from the other; you "
                      f"hold up to {args.hold_mb} MB for {args.hold_days} days for their "
                      f"users, they hold {added.welcome.hold_bytes // (1024 * 1024)} MB for "
                      f"{added.welcome.hold_days} days for yours.")
            elif added.problem is not None and added.problem.startswith("refused"):
                raise CliError(f"{name} {clean(added.problem)}; ask for a new invite")
            else:
                print(f"Saved the invite from {name}, but its node did not answer "
                      f"({clean(added.problem or '', 200)}). Your node redeems it as soon as "
                      f"{name} is reachable; `mailnode friend list` shows the state.")
        elif args.friend_command == "remove":
            gone = remove_friend(data_dir, args.name)
            print(f"Removed {gone.name}; dropped {gone.held_count} message(s) held for it. "
                  "Your records stop listing it as a relay within seconds.")
        else:
            friends = list_friends(data_dir)
            if not friends:
                print("no friends yet: `mailnode invite` prints a token for a friend")
            now = time.time()
            for friend in friends:
                print(describe(friend, now))
    except FriendError as exc:
        raise CliError(str(exc)) from None


def cmd_doctor(args: argparse.Namespace) -> None:
    """Print the checklist; exit status 1 when a check failed (something unsafe or broken)."""
    from mailnode.doctor import doctor, exit_status

    data_dir = _data_dir(args)
    _require_node(data_dir)
    checks = doctor(data_dir, time.time())
    for check in checks:
        print(check.line())
    if exit_status(checks):
        raise CliError("some checks failed (FAIL above): apply the fix after each arrow")


def cmd_settings(args: argparse.Namespace) -> None:
    """Print the client settings again (quickstart shows them once, at the first run)."""
    data_dir = _data_dir(args)
    _require_node(data_dir)
    config = load(data_dir / CONFIG_NAME)
    db, store = _open_store(data_dir)
    try:
        users = asyncio.run(store.list_users())
    finally:
        db.close()
    if args.name is not None:
        users = [u for u in users if u.name == args.name]
        if not users:
            raise CliError(f"no user {args.name!r} on this node (`mailnode user list` shows "
                           "them)")
    if not users:
        raise CliError(f"no users yet: mailnode --data-dir {data_dir} user add NAME")
    password: str | None = None
    if args.qr:
        # The node keeps only a hash, and Delta Chat's code needs the password itself: the
        # user types it (or passes MAILNODE_PASSWORD), and it is checked before it is shown.
        if args.name is None:
            raise CliError("--qr needs a user name: mailnode settings NAME --qr")
        password = os.environ.get("MAILNODE_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                raise CliError("--qr needs the password: set MAILNODE_PASSWORD or run in a "
                               "terminal")
            password = getpass.getpass(f"Password for {args.name} (it goes into the code): ")
        db, store = _open_store(data_dir)
        try:
            if asyncio.run(store.authenticate(args.name, password)) is None:
                raise CliError(f"that is not {args.name}'s password; nothing was shown")
        finally:
            db.close()
    tls = fingerprint(certificate_files(config, data_dir)[0])
    print("\n\n".join(client_settings(config, user, config.smtp_port, config.imap_port, tls,
                                      password=password, qr=password is not None
                                      and sys.stdout.isatty())
                      for user in users))


def _first_user_name() -> str:
    name = re.sub(r"[^a-z0-9._-]", "", getpass.getuser().lower())[:64]
    return name if USER_NAME.match(name) else "me"


def cmd_backup(args: argparse.Namespace) -> None:
    """An encrypted, consistent backup of the node (it may be running)."""
    from mailnode.ops import progress_printer
    from mailnode.ops.backup import BackupError, backup, read_passphrase

    data_dir = _data_dir(args)
    _require_node(data_dir)
    try:
        passphrase = read_passphrase("MAILNODE_BACKUP_PASSPHRASE", _prompt, confirm=True)
        saved = backup(data_dir, Path(args.file), passphrase,
                       progress_printer(sys.stderr, "database pages copied"))
    except BackupError as exc:
        raise CliError(str(exc)) from None
    print(f"Backed up {', '.join(saved)} to {args.file} (encrypted; without the passphrase "
          "it cannot be restored). Restore with: mailnode --data-dir NEW_DIR restore FILE")


def cmd_restore(args: argparse.Namespace) -> None:
    from mailnode.ops.backup import BackupError, read_passphrase, restore

    data_dir = _data_dir(args)
    try:
        passphrase = read_passphrase("MAILNODE_BACKUP_PASSPHRASE", _prompt, confirm=False)
        restored = restore(Path(args.file), data_dir, passphrase)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    print(f"Restored {', '.join(restored)} into {data_dir}. Start it with: mailnode "
          f"--data-dir {data_dir} run (stop the old node first: both have the same keys)")


def _prompt(text: str) -> str:
    if not sys.stdin.isatty():
        raise CliError("no passphrase: set MAILNODE_BACKUP_PASSPHRASE or run in a terminal")
    return getpass.getpass(text)


def cmd_import(args: argparse.Namespace) -> None:
    """File an mbox file or a Maildir into a user's mailbox."""
    from mailnode.ops import progress_printer
    from mailnode.ops.mailfiles import MailFileError, import_mail

    data_dir = _data_dir(args)
    _require_node(data_dir)
    limit = load(data_dir / CONFIG_NAME).max_message_size
    try:
        done = import_mail(data_dir, args.user, Path(args.source), args.mailbox, limit,
                           progress_printer(sys.stderr, "messages"))
    except MailFileError as exc:
        raise CliError(str(exc)) from None
    print(f"Imported {done.done} message(s) into {args.user}'s {args.mailbox}"
          + (f"; skipped {done.skipped} larger than max_message_size ({limit} bytes)"
             if done.skipped else ""))


def cmd_export(args: argparse.Namespace) -> None:
    from mailnode.ops import progress_printer
    from mailnode.ops.mailfiles import MailFileError, export_mail

    data_dir = _data_dir(args)
    _require_node(data_dir)
    try:
        done = export_mail(data_dir, args.user, args.mailbox, Path(args.target),
                           progress_printer(sys.stderr, "messages"))
    except MailFileError as exc:
        raise CliError(str(exc)) from None
    print(f"Exported {done.done} message(s) from {args.user}'s {args.mailbox} to "
          f"{args.target}")


def cmd_logs(args: argparse.Namespace) -> None:
    """The last lines of the node's log file, then follow it (Ctrl-C stops)."""
    from mailnode.logsetup import LOG_NAME
    from mailnode.ops.logtail import follow, last_lines

    path = _data_dir(args) / LOG_NAME
    if not path.is_file():
        raise CliError(f"no log file {path} yet: `mailnode run` (or quickstart) writes it")
    if args.no_follow:
        sys.stdout.write(last_lines(path, args.lines).decode("utf-8", "replace"))
    else:
        follow(path, sys.stdout, args.lines)


def cmd_install_service(args: argparse.Namespace) -> None:
    """Write a sandboxed systemd unit for this node."""
    from mailnode.ops.service import ServiceError, install, next_steps

    data_dir = _data_dir(args)
    _require_node(data_dir)
    target = Path(args.unit)
    try:
        install(target, data_dir, args.user, args.force)
    except ServiceError as exc:
        raise CliError(str(exc)) from None
    print(f"Wrote {target}: runs this node as user {args.user!r}, which may write only "
          f"{data_dir}. Then, as root:")
    for step in next_steps(target, data_dir, args.user):
        print(f"  {step}")


def cmd_quickstart(args: argparse.Namespace) -> None:
    from mailnode.guide import JOIN_HINT, choices, no_node, orphaned
    from mailnode.passwords import judge

    data_dir = _data_dir(args)
    banner: list[str] = []
    if (data_dir / CONFIG_NAME).exists():
        banner.append(f"Using the existing node in {data_dir} (`mailnode settings` prints the "
                      "client settings again).")
        user = None
    else:
        # Everything is checked before anything is written: a refusal leaves no half node.
        if orphaned(data_dir):  # a lost mailnode.toml: init repairs it, keeping the users
            raise CliError(no_node(data_dir))
        _check_new_node(data_dir)
        config = _config_from(args)
        _confirm_exposure(config, args.yes)
        name = _first_user_name()
        given = os.environ.get("MAILNODE_PASSWORD")
        if given == "":
            raise CliError("MAILNODE_PASSWORD is set but empty: set it to the password, or "
                           "unset it to get a random one")
        if given is not None:
            _strong_enough(judge(given, (name,)), args.allow_weak)
        password = given or secrets.token_urlsafe(12)
        init_data_dir(data_dir, config)
        user = _add_user(data_dir, name, password)
        banner += [f"First run: created a node and the user {name!r}. Choices made (all in "
                   f"{data_dir / CONFIG_NAME}):", *choices(config, data_dir)]
    config = load(data_dir / CONFIG_NAME)
    if user is not None:
        banner.append(client_settings(
            config, user, config.smtp_port, config.imap_port,
            fingerprint(certificate_files(config, data_dir)[0]),
            password=password if given is None else None, qr=sys.stdout.isatty()))
        # After the settings (and the phone's QR code): still on screen when the node runs.
        banner.append(f"Password for {user.name}: "
                      + ("the one in MAILNODE_PASSWORD" if given is not None
                         else f"{password}   <- random, shown once: write it down "
                              f"(`mailnode user passwd {user.name}` changes it)"))
    banner += [JOIN_HINT,
               f"Add users with: mailnode --data-dir {data_dir} user add NAME.  Stop with "
               "Ctrl-C."]
    _run_node(data_dir, banner)


def _add_node_options(p: argparse.ArgumentParser) -> None:
    """The settings ``init`` (and a first ``quickstart``) writes into mailnode.toml."""
    defaults = Config()
    p.add_argument("--host", default=defaults.host,
                   help="address all listeners bind to (default %(default)s)")
    p.add_argument("--smtp-port", type=int, default=defaults.smtp_port,
                   help="SMTP submission port (default %(default)s)")
    p.add_argument("--imap-port", type=int, default=defaults.imap_port,
                   help="IMAP port (default %(default)s)")
    p.add_argument("--smtps-port", type=int, default=defaults.smtps_port,
                   help="SMTP submission port with implicit TLS, 0: none (default %(default)s)")
    p.add_argument("--imaps-port", type=int, default=defaults.imaps_port,
                   help="IMAP port with implicit TLS, 0: none (default %(default)s)")
    p.add_argument("--p2p-port", type=int, default=defaults.p2p_port,
                   help="DHT UDP port; transfers use TCP on the same number "
                        "(default %(default)s)")
    p.add_argument("--bootstrap", nargs="*", default=[], metavar="HOST:PORT",
                   help="other nodes' DHT addresses to join the network through")
    p.add_argument("--p2p-host", default=defaults.p2p_host, metavar="ADDR",
                   help="address the DHT and transfer listeners bind to, e.g. 0.0.0.0 to "
                        "federate with other machines while SMTP and IMAP stay on --host "
                        "(default: --host)")
    p.add_argument("--advertise", default=defaults.advertise_host, metavar="HOST[:PORT]",
                   help="address (and port, if forwarded) other nodes should dial; by default "
                        "the address they are routed to")
    p.add_argument("--yes", action="store_true",
                   help="confirm choices that need it (a --host beyond loopback)")
    p.add_argument("--allow-weak", action="store_true",
                   help="quickstart: accept a weak $MAILNODE_PASSWORD (never a common one)")


def _add_hold_options(p: argparse.ArgumentParser) -> None:
    from mailnode.friends.commands import DEFAULT_HOLD_DAYS, DEFAULT_HOLD_MB

    p.add_argument("--hold-mb", type=int, default=DEFAULT_HOLD_MB, metavar="N",
                   help="space your node gives the friend's users for mail held while their "
                        "node is away (default %(default)s)")
    p.add_argument("--hold-days", type=int, default=DEFAULT_HOLD_DAYS, metavar="N",
                   help="days such mail is kept (default %(default)s)")


def _config_from(args: argparse.Namespace) -> Config:
    for peer in args.bootstrap:
        parse_hostport(peer)
    return validate(Config(host=args.host, smtp_port=args.smtp_port, imap_port=args.imap_port,
                           smtps_port=args.smtps_port, imaps_port=args.imaps_port,
                           p2p_port=args.p2p_port, bootstrap=tuple(args.bootstrap),
                           p2p_host=args.p2p_host, advertise_host=args.advertise))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailnode",
        description="A decentralised mail node: stock IMAP/SMTP clients, a Kademlia DHT, "
                    "end-to-end sealed mail, mailboxes in SQLite.")
    parser.add_argument("--version", action="version", version=f"mailnode {_version()}")
    _add_global_options(parser, None, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("init", help="create a node: config, keys and database",
                       description="Create a data directory with mailnode.toml, the node key "
                                   "and an empty database, explaining each choice. Refuses an "
                                   "existing node; rewrites only a lost mailnode.toml.")
    _add_node_options(p)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("user", help="manage users: add, list, passwd, remove",
                       description="Manage this node's users.")
    user_sub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    weak = "accept a password the strength check calls weak (never a common one)"
    pa = user_sub.add_parser("add", help="create a user (password from $MAILNODE_PASSWORD "
                             "or prompted)", description="Create a user with a new key; "
                             "prints the user's mail address as the last line.")
    pa.add_argument("name", help="login name: lowercase letters, digits, . _ -")
    pa.add_argument("--allow-weak", action="store_true", help=weak)
    user_sub.add_parser("list", help="one line per user: name, address")
    pa = user_sub.add_parser("passwd", help="change a user's password ($MAILNODE_PASSWORD "
                             "or prompted)")
    pa.add_argument("name")
    pa.add_argument("--allow-weak", action="store_true", help=weak)
    pa = user_sub.add_parser("remove", help="delete a user and all their mail")
    pa.add_argument("name")
    pa.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_user)
    p = sub.add_parser("settings", help="print the mail-client settings again",
                       description="Print the settings to type into a mail client, for one "
                                   "user or all.")
    p.add_argument("name", nargs="?", help="a user (default: all)")
    p.add_argument("--qr", action="store_true", help="also the Delta Chat setup code (asks "
                   "for the user's password, which the code carries)")
    p.set_defaults(func=cmd_settings)

    p = sub.add_parser("run", help="run the node in the foreground (stop with Ctrl-C)",
                       description="Serve SMTP, IMAP and the DHT until SIGINT/SIGTERM.")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("status", help="node id, DHT peers, queue and users",
                       description="Show the node's id, DHT peers, queue and users.")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("queue", help="mail waiting for other nodes: list, retry now",
                       description="List the messages waiting for their recipients' nodes, "
                                   "one line per recipient, or retry them now.")
    queue_sub = p.add_subparsers(dest="queue_command", metavar="ACTION")
    pa = queue_sub.add_parser("retry", help="make queued messages due now (all when no ID)",
                              description="Make queued messages due now; a running node "
                                          "sends them within seconds.")
    pa.add_argument("ids", nargs="*", type=int, metavar="ID", help="ids from `mailnode queue`")
    p.set_defaults(func=cmd_queue)
    p = sub.add_parser("invite", help="print a one-time token that makes a friend's node "
                       "a friend", description="Create an invite: one line (the last) to "
                       "send to a friend, who runs `mailnode friend add TOKEN`. Valid 7 days, "
                       "usable once.")
    _add_hold_options(p)
    p.add_argument("--qr", action="store_true", help="also print a QR code (the default in "
                   "a terminal)")
    p.set_defaults(func=cmd_invite)
    p = sub.add_parser("friend", help="friends' nodes: add (redeem a token), list, remove",
                       description="Friends' nodes bootstrap each other and hold sealed mail "
                                   "for each other's users while one is away.")
    friend_sub = p.add_subparsers(dest="friend_command", metavar="ACTION")
    pa = friend_sub.add_parser("add", help="accept a friend's invite token",
                               description="Redeem a token from `mailnode invite`; works "
                                           "whether or not either node runs now.")
    pa.add_argument("token", help="the token (mn1:...)")
    _add_hold_options(pa)
    friend_sub.add_parser("list", help="one line per friend: name, state")
    pa = friend_sub.add_parser("remove", help="forget a friend (drops mail held for it)")
    pa.add_argument("name", help="as `mailnode friend list` shows it")
    p.set_defaults(func=cmd_friend)
    p = sub.add_parser("doctor", help="audit the node: file modes, TLS, peers, disk, queue, "
                       "backup", description="Check a stopped or running node and print one "
                       "line per check with the fix for each problem; exit status 1 when "
                       "something is unsafe or broken.")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("backup", help="write an encrypted backup of the node (it may run)",
                       description="Copy the database (consistently, while the node runs), "
                                   "keys, certificate and config into FILE, encrypted with a "
                                   "passphrase ($MAILNODE_BACKUP_PASSPHRASE or prompted).")
    p.add_argument("file", help="the backup file to write")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="recreate a node from a backup in an empty --data-dir",
                       description="Unpack a backup made by `mailnode backup` into the data "
                                   "directory, which must be absent or empty.")
    p.add_argument("file", help="the backup file")
    p.set_defaults(func=cmd_restore)
    p = sub.add_parser("import", help="file an mbox file or a Maildir into a mailbox",
                       description="Import the messages (with their flags and dates) of an "
                                   "mbox file or a Maildir directory into a user's mailbox.")
    p.add_argument("user", help="the user's login name")
    p.add_argument("source", help="an mbox file, or a Maildir (a directory with cur/, new/)")
    p.add_argument("--mailbox", default="INBOX", help="target mailbox, created if needed "
                   "(default %(default)s)")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("export", help="write a mailbox to an mbox file or a Maildir",
                       description="Export a user's mailbox with flags and dates: to a new "
                                   "mbox file, or to a Maildir when TARGET is a directory or "
                                   "ends in /.")
    p.add_argument("user", help="the user's login name")
    p.add_argument("mailbox", help="e.g. INBOX")
    p.add_argument("target", help="a new mbox file, or a directory (Maildir)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("logs", help="show the node's log file and follow it",
                       description="Print the last lines of mailnode.log in the data "
                                   "directory, then new ones as the node writes them "
                                   "(across rotations) until Ctrl-C.")
    p.add_argument("-n", "--lines", type=int, default=20, metavar="N",
                   help="lines to show first (default %(default)s)")
    p.add_argument("--no-follow", action="store_true", help="print them and exit")
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("install-service", help="write a sandboxed systemd unit",
                       description="Write a systemd unit that runs this node as a dedicated "
                                   "user, with the data directory its only writable path.")
    p.add_argument("unit", nargs="?", default="/etc/systemd/system/mailnode.service",
                   help="where to write it (default %(default)s)")
    p.add_argument("--user", default="mailnode", help="system user to run as "
                   "(default %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_install_service)
    p = sub.add_parser("quickstart", help="first run: init, create a user, print client "
                       "settings, run", description="Create a node in the data directory if "
                       "there is none, create a first user, print mail-client settings and "
                       "run the node. The options apply when it creates the node.")
    _add_node_options(p)
    p.set_defaults(func=cmd_quickstart)
    _accept_global_options(parser)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mailnode")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown (not installed)"


def _add_global_options(p: argparse.ArgumentParser, default_dir: object,
                        default_verbose: object) -> None:
    p.add_argument("--data-dir", default=default_dir,
                   help=f"node directory (default: $MAILNODE_HOME or {default_data_dir()})")
    p.add_argument("-v", "--verbose", action="store_true", default=default_verbose,
                   help="debug logging")


def _accept_global_options(parser: argparse.ArgumentParser) -> None:
    """Let ``--data-dir`` and ``-v`` follow any (sub)command, as people type them.

    Subcommands get them with a suppressed default, so an option given before the command
    is not reset by the subcommand's parser.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any("--data-dir" in a.option_strings for a in child._actions):
                    _add_global_options(child, argparse.SUPPRESS, argparse.SUPPRESS)
                _accept_global_options(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `mailnode`: help, as pip and docker do; not an error
        parser.print_help()
        return 0
    _configure_logging(args.verbose, args.command in ("run", "quickstart"))
    try:
        args.func(args)
    except (CliError, ConfigError, PermissionError) as exc:
        print(f"mailnode: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `mailnode status | head`
        return 0
    except Exception as exc:  # a bug: keep the details in the log, end on a plain sentence
        logging.getLogger("mailnode").exception("unexpected error")
        print(f"mailnode: unexpected error ({type(exc).__name__}: {exc}). This is a bug; "
              "the log above has the details, please report it.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
