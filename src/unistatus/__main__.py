from unistatus.cli import main

main()
