"""`owl2 chat`: turns with streamed replies, /image, /reset, quit, bad images, missing model."""

from __future__ import annotations

import io

from owl2.cli.main import main


def chat(monkeypatch, model_dir, lines: list[str], *extra: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))
    return main(["chat", "--model", str(model_dir), "--max-new-tokens", "4", *extra])


def test_chat_turns_image_reset_quit(monkeypatch, capsys, model_dir, tiny_data):
    from owl2.cli import chat as chat_module

    seen = []
    original = chat_module.Session.reply

    def spy(self, text, out=None):
        answer = original(self, text) if out is None else original(self, text, out)
        seen.append((len(self.messages), len(self.inputs.get("image", [])), answer))
        return answer

    monkeypatch.setattr(chat_module.Session, "reply", spy)
    image = tiny_data["images"] / "heldout_000000.png"
    lines = ["what color is the circle ?", f"/image {image}", "what shape is the red object ?", "/reset", "hello", "/quit",
             "never read"]  # fmt: skip
    assert chat(monkeypatch, model_dir, lines, "--image", str(image)) == 0
    out = capsys.readouterr().out
    assert out.count("ASSISTANT: ") == 3
    assert "attached to your next message" in out and "(conversation cleared)" in out
    assert "never read" not in out
    # turn 1 sees the --image, turn 2 both images and the history, after /reset nothing
    assert [(m, i) for m, i, _ in seen] == [(2, 1), (4, 2), (2, 0)]
    for _, _, answer in seen:  # the streamed text is the reply
        assert f"ASSISTANT: {answer}" in out


def test_chat_bad_image_keeps_going_and_bad_start_is_one_line(monkeypatch, capsys, model_dir, tmp_path):
    lines = [f"/image {tmp_path / 'missing.png'}", "/nope", f"/audio {tmp_path / 'a.wav'}", "/rgbd only-one.png"]
    assert chat(monkeypatch, model_dir, lines) == 0
    out = capsys.readouterr().out
    assert "error: image" in out and "not found" in out and "unknown command /nope" in out
    assert "error: audio inputs were given, but this model takes only image" in out
    assert "usage: /rgbd IMAGE MAP" in out

    assert chat(monkeypatch, model_dir, [], "--image", str(tmp_path / "missing.png")) == 2
    err = capsys.readouterr().err
    assert "not found" in err and len(err.strip().splitlines()) == 1
    assert chat(monkeypatch, tmp_path / "nothing", []) == 2
    err = capsys.readouterr().err
    assert "no such model folder" in err and "Traceback" not in err
