"""The CLI's argument handling and failure line, without a server."""

import subprocess

import pytest
from styleserve import cli
from styleserve.cli import build_parser, main
from styleserve.options import PRESETS

from tests.client.client_helpers import cli_command
from tests.fixtures_server import free_port


@pytest.fixture
def pictures(content, style):
    return [str(content), str(style)]


def test_help_shows_the_presets_defaults_from_the_options_module(capsys):
    with pytest.raises(SystemExit):
        main(["stylize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for preset, options in PRESETS.items():
        assert f"{preset}: {options.iterations}" in text
        assert f"{preset}: {options.content_weight}" in text


def test_unset_flags_stay_unset_so_the_preset_decides(pictures, tmp_path):
    args = build_parser().parse_args(["stylize", *pictures, "-o", str(tmp_path / "o.png")])
    for name in ("preset", "size", "iterations", "content_weight", "preserve_color", "seed"):
        assert getattr(args, name) is None, name


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-o", "out.gif"], "name a .png, .jpg or .webp file"),
        (["-o", "no/such/folder/out.png"], "does not exist"),
        (["-o", "out.png", "--preview-every", "3"], "--preview-every needs --previews"),
        (["-o", "out.png", "--style-blend", "1,x"], "comma-separated numbers"),
    ],
)
def test_usage_errors_exit_2_saying_what_to_fix(
    pictures, extra, message, capsys, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["stylize", *pictures, *extra])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unreachable_server_is_one_line_with_the_code_and_exit_1(pictures, tmp_path):
    port = free_port()
    done = subprocess.run(
        cli_command(
            "stylize", *pictures, "-o", str(tmp_path / "out.png"), "--server", f"127.0.0.1:{port}"
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("styleserve: UNAVAILABLE: ")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["info", "--timeout", "0"], "argument --timeout: must be seconds above 0"),
        (["info", "--timeout", "nan"], "argument --timeout: must be seconds above 0"),
        (["info", "--timeout", "1e10"], "argument --timeout: must be seconds above 0"),
        (["jobs", "watch", "abc", "--after", "-5"], "argument --after: must be 0 or more"),
        (["info", "--client-cert", __file__], "client_key: client_cert and client_key go"),
    ],
)
def test_bad_usage_is_one_line_and_status_2_never_a_traceback(capsys, argv, said):
    port = free_port()  # nothing listens: no call may be needed to refuse them
    try:
        status = main([*argv, "--server", f"127.0.0.1:{port}"])
    except SystemExit as exit:  # argparse's refusals
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_an_empty_output_name_is_bad_usage_not_the_current_folder(pictures, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["stylize", *pictures, "-o", ""])
    assert exit.value.code == 2
    assert "-o: give the output file (or a folder), got an empty name" in capsys.readouterr().err


def test_a_folder_run_checks_its_style_and_options_before_making_anything(
    content, style, tmp_path, capsys
):
    out = tmp_path / "out"
    cases = [
        ([str(content), str(tmp_path / "nothere.jpg")], "is not a file"),
        ([str(content), str(style), "--size", "-5"], "size: must be an integer >= 1"),
        ([str(tmp_path / "empty"), str(style)], "no content pictures"),
    ]
    (tmp_path / "empty").mkdir()
    for argv, said in cases:
        with pytest.raises(SystemExit) as exit:
            main(["stylize", *argv, "-o", f"{out}/", "--server", f"127.0.0.1:{free_port()}"])
        assert exit.value.code == 2, argv
        assert said in capsys.readouterr().err, argv
        assert not out.exists()


def test_one_pictures_job_and_a_video_check_their_input_and_options_before_any_call(
    content, style, tmp_path, capsys
):
    # Nothing listens on --server: had any of these been sent, it would end UNAVAILABLE, 1.
    server = ["--server", f"127.0.0.1:{free_port()}"]
    out = str(tmp_path / "out.png")
    (tmp_path / "clips").mkdir()
    cases = [
        (["stylize", str(content), str(style), "-o", out, "--size", "-5"], "size: must be"),
        (["stylize", str(content), str(style), "-o", out, "-j", "2"], "-j: runs several"),
        (
            ["stylize", str(content), str(style), "-o", out, "--style-blend", "1,1"],
            "style_blend: give one weight per style picture (1), got 2",
        ),
        (
            ["video", str(tmp_path / "no.mp4"), str(style), "-o", str(tmp_path / "o.mp4")]
            + ["--time-budget", "5"],
            "time_budget_seconds: a video has no best picture so far",
        ),
        (
            ["video", str(tmp_path / "clips"), str(style), "-o", str(tmp_path / "o.mp4")],
            "clips: a folder, not a clip",
        ),
        (
            ["video", str(tmp_path / "no.mp4"), str(style), "-o", str(tmp_path / "o.mp4")],
            "no.mp4: no such file",
        ),
        (
            [
                "video",
                str(tmp_path / "no.mp4"),
                str(style),
                "-o",
                str(tmp_path / "o.mp4"),
                "--temporal-weight",
                "5",
            ],
            "temporal_weight: must be in [0, 1]",
        ),
    ]
    for argv, said in cases:
        with pytest.raises(SystemExit) as exit:
            main([*argv, *server])
        assert exit.value.code == 2, argv
        err = capsys.readouterr().err
        # The command's own usage and name, and no request id: nothing was sent.
        assert err.startswith(f"usage: styleserve {argv[0]} "), err
        assert f"styleserve {argv[0]}: error: " in err and said in err, (argv, err)
        assert "request id" not in err, err
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "o.mp4").exists()


def test_a_watched_job_is_written_only_under_a_pictures_name(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit:
        main(["jobs", "watch", "some-job", "-o", str(tmp_path / "w.gif")])
    assert exit.value.code == 2
    assert "-o: name a .png, .jpg or .webp file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["jobs", "watch", "some-job"], "interrupted; the job runs on"),
        (["info"], "interrupted\n"),
    ],
)
def test_ctrl_c_says_what_became_of_the_job(monkeypatch, capsys, argv, said):
    def interrupted(*_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_jobs_watch", interrupted)
    monkeypatch.setattr(cli, "_info", interrupted)
    assert main(argv) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err.startswith(f"styleserve: {said}")
