from acrelease.cli import main

main()
