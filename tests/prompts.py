"""Real prompts for the parity and reference tests: code, chat, prose, lists, multilingual, repetitive text."""

PARITY_PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "Explain the difference between a list and a tuple in Python.",
    "def quicksort(arr):\n",
    "The history of the Roman Empire begins",
    "List five fruits that are rich in vitamin C:\n1.",
    "Translate to French: The weather is nice today.",
    "Q: What is 17 times 23?\nA:",
    "Write a haiku about the sea.",
    "import numpy as np\n\ndef moving_average(x, window):\n    ",
    "Once upon a time, in a small village by the mountains,",
    "SELECT name, COUNT(*) FROM orders",
    "The three laws of thermodynamics are",
    "class Stack:\n    def __init__(self):\n",
    "Dear hiring manager, I am writing to apply for",
    "Write a short story about a robot learning to paint.",
    "Here is a JSON object describing a book: {",
    "Les fleurs du printemps sont",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "1, 2, 3, 4, 5, 6, 7, 8,",
    "What are the benefits of regular exercise? Answer in a bulleted list.",
    "#include <stdio.h>\n\nint main(void) {\n",
    "The mitochondria is the powerhouse of the cell because",
]

REFERENCE_TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was a bright cold day in April, and the clocks were striking "
    "thirteen.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n"
    "print([fibonacci(i) for i in range(10)])\n",
    "In 1492, Columbus sailed the ocean blue. The voyage across the Atlantic took about ten weeks, and it changed "
    "the history of two continents.",
    "<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\nThe capital of Japan is Tokyo."
    "<|im_end|>\n",
    "Photosynthesis converts light energy into chemical energy. Plants take in carbon dioxide and water and, using "
    "sunlight, produce glucose and oxygen.",
    "SELECT customer_id, SUM(amount) AS total FROM payments WHERE paid_at >= '2024-01-01' GROUP BY customer_id "
    "ORDER BY total DESC LIMIT 10;",
    "Machine learning models learn patterns from data. A model that memorises its training set without "
    "generalising is said to overfit.",
    "Ingredients: 2 cups of flour, 1 cup of sugar, 3 eggs, half a cup of butter. Mix the dry ingredients first, "
    "then add the eggs one at a time.",
]
