from llmcli.cli.fastcomplete import main

main()
