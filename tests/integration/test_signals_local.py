"""The local stack's job change announcements (Unix datagrams between processes): two peers in one test
process stand for the API and a worker."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.adapters.signals_local import DatagramJobSignals


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[tuple[DatagramJobSignals, DatagramJobSignals]]:
    directory = tmp_path / "signals"
    directory.mkdir()
    api, worker = DatagramJobSignals(str(directory)), DatagramJobSignals(str(directory))
    yield api, worker
    api.close()
    worker.close()


def test_an_announcement_wakes_the_watcher_in_another_peer(peers: tuple[DatagramJobSignals, ...]) -> None:
    api, worker = peers
    assert api.notifies
    with api.watch("job-1") as wait_changed:
        worker.job_changed("job-2")  # another job: not for this watcher
        worker.job_changed("job-1")
        assert wait_changed(30) is True
        assert wait_changed(0.05) is False  # consumed; job-2's announcement did not count


def test_an_announcement_reaches_this_peers_own_watchers_too(peers: tuple[DatagramJobSignals, ...]) -> None:
    api, _ = peers
    with api.watch("job-1") as wait_changed:
        api.job_changed("job-1")
        assert wait_changed(30) is True


def test_a_dead_peers_socket_is_removed_and_the_others_still_hear(
    peers: tuple[DatagramJobSignals, ...], tmp_path: Path
) -> None:
    api, worker = peers
    dead = tmp_path / "signals" / "999999-dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(dead))  # bound, then closed: like a killed worker's socket
    with api.watch("job-1") as wait_changed:
        worker.job_changed("job-1")
        assert wait_changed(30) is True
    assert not dead.exists()


def test_without_a_directory_an_announcement_is_dropped_quietly(tmp_path: Path) -> None:
    signals = DatagramJobSignals(str(tmp_path / "gone"))
    signals.job_changed("job-1")  # the stack is shutting down: nothing to tell, nothing raised


def test_leaving_the_watch_wakes_a_waiter_in_another_thread(peers: tuple[DatagramJobSignals, ...]) -> None:
    api, _ = peers
    answers: list[bool] = []
    with api.watch("job-1") as wait_changed:
        waiter = threading.Thread(target=lambda: answers.append(wait_changed(3600)))
        waiter.start()
    waiter.join(30)
    assert answers == [False]
    assert os.path.exists(api.address)  # the socket stays for the next watch of this process
