from nextclass.cli import main

main()
