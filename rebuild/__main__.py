from rebuild.cli import run

run()
