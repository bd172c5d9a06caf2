from numcodec_plugin.training.train import main

main()
