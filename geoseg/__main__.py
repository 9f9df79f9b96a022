from geoseg.cli.main import main

main()
