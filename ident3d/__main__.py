from ident3d.cli import main

main()
