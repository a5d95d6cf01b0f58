from unistatus.launch import main

main()
