Hook['res'].json(Hook['params'])
