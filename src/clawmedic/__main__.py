from clawmedic.cli import main

main()
