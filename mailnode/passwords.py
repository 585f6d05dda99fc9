"""Password strength for users' logins: a real estimator (zxcvbn), not a length rule.

A login is guessed online, but the hash in mailnode.db may leak (a backup, a stolen disk), so
a password must resist an offline guesser too: zxcvbn's score 3 (about 10^8 guesses and more)
is asked for. Scores 1 and 2 are accepted only when the owner says so (``--allow-weak``);
score 0 (``password``, ``123456``, a user's own name) never.
"""

from __future__ import annotations

from dataclasses import dataclass

from zxcvbn import zxcvbn

MIN_SCORE = 3
# zxcvbn refuses longer input (its matching grows with length); a prefix's strength is a lower
# bound of the whole password's, so a long password is judged by its first 72 characters.
MAX_CHECKED = 72


@dataclass(frozen=True)
class Verdict:
    """``problem`` is None when the password is strong; else one line saying why not."""

    problem: str | None
    never: bool = False  # refused even with --allow-weak

    @property
    def ok(self) -> bool:
        return self.problem is None


def judge(password: str, user_inputs: tuple[str, ...] = ()) -> Verdict:
    """How guessable ``password`` is, judged with the user's name and the like as hints."""
    if not password:
        return Verdict("the password is empty", never=True)
    result = zxcvbn(password[:MAX_CHECKED], user_inputs=[*user_inputs, "mailnode"])
    score = int(result["score"])
    if score >= MIN_SCORE:
        return Verdict(None)
    feedback = result["feedback"]
    hint = " ".join(filter(None, [str(feedback.get("warning") or ""),
                                  *(str(s) for s in feedback.get("suggestions") or [])]))
    why = "too easy to guess" if score == 0 else "weak"
    problem = f"the password is {why} (strength {score} of 4, {MIN_SCORE} needed)"
    return Verdict(f"{problem}: {hint}".rstrip(".") if hint else problem, never=score == 0)
