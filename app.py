"""Gradio app (placeholder until issue 6 lands)."""

if __name__ == "__main__":
    print("The web app is not built yet (see issue 6); the library `wct` is usable now.")
