from llmctl.cli.entry import main

main()
