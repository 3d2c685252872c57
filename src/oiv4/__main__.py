from oiv4.cli import main

main()
