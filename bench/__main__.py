from bench.run import main

raise SystemExit(main(command="python -m bench"))
