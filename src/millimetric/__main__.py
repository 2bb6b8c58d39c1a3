from millimetric.cli import app

app(prog_name="millimetric")
