from thermofs.cli import main

main()
