"""Check functions of this repository's roadmap: each receives the answer's code and
raises AssertionError when the answer is not good enough."""

import ast


def error_names_next_step(code: str) -> None:
    """An error answer defines a function that returns the problem, the input that caused it
    and a next step."""
    tree = ast.parse(code)
    functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert functions, "the answer defines no function"
    keys = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    missing = {"error", "input", "next_step"} - keys
    assert not missing, f"the error body lacks {', '.join(sorted(missing))}"
