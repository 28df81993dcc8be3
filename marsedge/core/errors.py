"""The error the model metadata schema raises (re-exported by the edge runtime), and the
one way marsedge turns an exception into one line of a message."""


class ModelError(Exception):
    """The model file is missing, is not a TFLite model, lacks marsedge metadata, or does
    not match the model contract (input/output shapes, class list)."""


def first_line(exc: BaseException, *, name_unknown: bool = False) -> str:
    """An exception as one printable line: the first non-empty line of its message, with
    control characters replaced; the exception's type name when the message is empty.

    With ``name_unknown`` the type name is prefixed to the message unless the exception
    is an ``OSError``, ``SyntaxError``, ``ValueError`` or ``EOFError`` (whose messages
    name the problem themselves).
    """
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = one_line(text)
    if not text:
        return type(exc).__name__
    if name_unknown and not isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)):
        return f"{type(exc).__name__}: {text}"
    return text


def one_line(message: str) -> str:
    """``message`` with every non-printable character (newline, escape...) as a space."""
    return message if message.isprintable() else "".join(c if c.isprintable() else " " for c in message)
