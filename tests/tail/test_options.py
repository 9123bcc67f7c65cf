"""logpipe.tail.options: LOGPIPE_TAIL_* read once, errors naming the variable."""

from __future__ import annotations

import pytest

from logpipe.exceptions import ConfigError
from logpipe.tail import load_options


class TestOptions:
    def test_from_the_environment(self) -> None:
        opts = load_options(environ={"LOGPIPE_TAIL_PATHS": "a.log,b/*.log", "LOGPIPE_TAIL_START": "end"})
        assert opts.paths == ("a.log", "b/*.log") and opts.start == "end"

    @pytest.mark.parametrize(
        ("env", "words"),
        [
            ({"LOGPIPE_TAIL_BATCH_SIZE": "0"}, "LOGPIPE_TAIL_BATCH_SIZE"),
            ({"LOGPIPE_TAIL_START": "middle"}, "LOGPIPE_TAIL_START"),
            ({"LOGPIPE_TAIL_BACKOFF": "5", "LOGPIPE_TAIL_MAX_BACKOFF": "1"}, "LOGPIPE_TAIL_MAX_BACKOFF"),
        ],
    )
    def test_bad_values_name_the_variable(self, env: dict[str, str], words: str) -> None:
        with pytest.raises(ConfigError, match=words):
            load_options(environ={"LOGPIPE_TAIL_PATHS": "a.log", **env})

    def test_nothing_to_follow(self) -> None:
        with pytest.raises(ConfigError, match="LOGPIPE_TAIL_PATHS"):
            load_options(environ={})
